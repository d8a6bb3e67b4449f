"""MONAI bundles of medswin models: find, run, verify and export them, and the config components MONAI lacks.

    from medswin.bundle import run_bundle, verify_bundle, export_bundle
    verify_bundle("swin_unetr_btcv")                                      # metadata, network in/out, configs
    run_bundle("swin_unetr_mni_tissue", "train", {"dataset_dir": "data/mni-tissue-2mm"})
    export_bundle("swin_unetr_mni_tissue")                                # models/model.pt -> models/model.ts

* :mod:`.runner`: finding bundles, running a config through ``monai.bundle.run``, verifying them;
* :mod:`.export`: TorchScript or ONNX export of a trained checkpoint, checked against the eager model;
* :mod:`.components`: what the configs reference by dotted path (``medswin.bundle.datalist``,
  ``BiplanarPair``, ``RegionsToLabelsd``, ``BiplanarLabelGridd``, ``for_export``).
"""

from .components import BiplanarLabelGridd, BiplanarPair, RegionsToLabelsd, datalist
from .export import compare_export, export_bundle, export_bundle_onnx, for_export, trace_input_shape
from .runner import (
    CONFIGS,
    check_targets,
    config_files,
    config_parser,
    find_bundles_dir,
    instantiate_components,
    list_bundles,
    missing_properties,
    resolve_bundle,
    run_bundle,
    schema_file,
    verify_bundle,
)

__all__ = [
    "CONFIGS",
    "BiplanarLabelGridd",
    "BiplanarPair",
    "RegionsToLabelsd",
    "check_targets",
    "compare_export",
    "config_files",
    "config_parser",
    "datalist",
    "export_bundle",
    "export_bundle_onnx",
    "find_bundles_dir",
    "for_export",
    "instantiate_components",
    "list_bundles",
    "missing_properties",
    "resolve_bundle",
    "run_bundle",
    "schema_file",
    "trace_input_shape",
    "verify_bundle",
]
