"""The refresh pipeline: retrain, gate, canary, promote or roll back, retire.

from corral.pipeline import PipelineRunner, load_pipeline
run = PipelineRunner(registry, settings).run("refresh.yaml", trigger="manual")
"""

from corral.pipeline.runner import PipelineLock, PipelineRunner, check_trigger
from corral.pipeline.runs import PipelineRun, RunStore, StageRecord
from corral.pipeline.spec import STAGES, PipelineSpec, load_pipeline, parse_pipeline

__all__ = [
    "STAGES",
    "PipelineLock",
    "PipelineRun",
    "PipelineRunner",
    "PipelineSpec",
    "RunStore",
    "StageRecord",
    "check_trigger",
    "load_pipeline",
    "parse_pipeline",
]
