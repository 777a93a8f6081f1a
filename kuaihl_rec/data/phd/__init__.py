"""Personalised highlight detection (PHD): the data contract, the PHD-GIFs CSV reader, the synthetic
personalised world and the batches the PHD models read (docs/HIGHLIGHTS.md).

Modules: :mod:`contract` (tables, validation, reading and writing a PHD directory),
:mod:`gifs` (the PHD-GIFs CSV release -> the label side of the contract), :mod:`world` (the
synthetic personalised world), :mod:`examples` (per-user examples, segment labels and the padded
batches for the models).
"""
