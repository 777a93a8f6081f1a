import logging
import os
import sys
from pathlib import Path

# tests import their helpers as top-level modules (tests/helpers.py)
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
