"""Self-supervised pretraining of any registered 3D model's encoder (``medswin pretrain``).

Tasks: Swin UNETR's inpainting / rotation / contrastive recipe, SimMIM in 3D, Barlow Twins, any
combination (optionally with the automatic weighted loss); see :mod:`medswin.ssl.tasks`.  The
trainer (:class:`PretrainTrainer`) runs on the supervised loop and writes ``encoder.pt``, which
``create_model(..., encoder_weights=path)`` and ``medswin train --encoder-weights`` load.
"""

from .tasks import TASKS, SSLModel, build_ssl_model, parse_tasks
from .trainer import PretrainConfig, PretrainTrainer

__all__ = ["TASKS", "PretrainConfig", "PretrainTrainer", "SSLModel", "build_ssl_model", "parse_tasks"]
