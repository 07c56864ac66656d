from .config import LoRATRFConfig
from .layer import LoRATRFLayer, init_task_vectors, relevance_gate
from .model import LoRATRFModel

__all__ = ["LoRATRFConfig", "LoRATRFLayer", "LoRATRFModel", "init_task_vectors", "relevance_gate"]
