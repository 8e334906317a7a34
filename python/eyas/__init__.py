"""eyas: the rl-tools RAPTOR student policy in PyTorch, proved equal to the C++ original, and trained."""
from eyas.inference import InferencePolicy
from eyas.model import StudentPolicy
from eyas.rltools_h5 import RLToolsH5Error, load_rltools_h5, raptor_checkpoint_path, save_rltools_h5

__all__ = ["StudentPolicy", "InferencePolicy", "load_rltools_h5", "save_rltools_h5", "RLToolsH5Error",
           "raptor_checkpoint_path"]
__version__ = "0.1.0"
