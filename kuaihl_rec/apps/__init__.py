"""The application layer: the ``kuaihl`` command line, ``kuaihl compare``, ``kuaihl demo`` and
their figures. The only place that imports ``kuaihl_rec``, ``baselines`` and ``ranking`` together.

The house, imports running one way (``tests/test_import_graph.py`` checks it)::

    kuaihl_rec.apps                      cli, commands, compare (+ entries, report, figures), demo
        |            |            |
    baselines     ranking         |      ID models / blended ranking + offline A/B
        |            |            |
    kuaihl_rec (core): config, data, model (+ registry), losses, metrics, train, serving, encoders, extract

``baselines`` registers its models through the ``kuaihl_rec.models`` entry point;
``kuaihl_rec.apps.compare_entries`` also imports it explicitly, so the commands work where the
package is on ``sys.path`` without being installed. ``ranking`` never imports the trainer: the app
layer hands it the scoring function (``kuaihl_rec.train.evaluate.evaluate_run``). This package
imports nothing itself, so ``kuaihl --help`` does not load torch.
"""
