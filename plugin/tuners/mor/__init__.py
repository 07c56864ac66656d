from .config import MoRConfig
from .layer import MoRLayer, fold_experts, mixture_of_ranks, switch_balance_loss
from .model import MoRModel

__all__ = ["MoRConfig", "MoRLayer", "MoRModel", "fold_experts", "mixture_of_ranks", "switch_balance_loss"]
