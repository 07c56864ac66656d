from .config import MoRConfig
from .layer import MoRLayer, expert_matrix, switch_balance_loss
from .model import MoRModel

__all__ = ["MoRConfig", "MoRLayer", "MoRModel", "expert_matrix", "switch_balance_loss"]
