"""Settings: one pydantic tree from corral.yaml and CORRAL_* variables, checked before anything starts.

The sections live in `corral.config.sections`; reading and masking them in `corral.config.loader`.
"""

from corral.config.loader import load_settings, masked
from corral.config.sections import (
    AlertRuleSettings,
    ArtifactSettings,
    AuthSettings,
    Deployment,
    EngineSettings,
    EvaluateSettings,
    GatewaySettings,
    GuardSettings,
    MonitorSettings,
    OnlineEvalRule,
    PipelineSettings,
    Price,
    RedisSettings,
    Route,
    Section,
    Settings,
    StoreSettings,
    TracingSettings,
    corral_home,
)

__all__ = [
    "ArtifactSettings",
    "AuthSettings",
    "Deployment",
    "EngineSettings",
    "EvaluateSettings",
    "GatewaySettings",
    "GuardSettings",
    "AlertRuleSettings",
    "MonitorSettings",
    "OnlineEvalRule",
    "PipelineSettings",
    "Price",
    "RedisSettings",
    "Route",
    "Section",
    "Settings",
    "StoreSettings",
    "TracingSettings",
    "corral_home",
    "load_settings",
    "masked",
]
