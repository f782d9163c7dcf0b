"""Generators and discriminators (torch ``nn.Module``s only)."""

from .conditional import (
    CONDITIONAL_CRITICS,
    CONDITIONAL_GENERATORS,
    CGANCritic,
    CGANGenerator,
    ConditionalBatchNorm2d,
    MaskedMultichannelCritic,
    ProjectionCritic,
    ProjectionGenerator,
    masked_composites,
)
from .fluorescence import (
    CRITIC_ARCHS,
    GENERATOR_ARCHS,
    DCGANCritic,
    DCGANGenerator,
    MultichannelCritic,
    MultichannelGenerator,
    OneClassGenerators,
    SeparableGenerator,
    StarGenerator,
    build_critic,
    build_generator,
    canonical_arch,
    count_parameters,
    make_models,
    multichannel_size,
    native_channels,
    pairs_from_native,
    tower_plan,
)

# one table of every architecture, so build_generator / build_critic rebuild any checkpoint
GENERATOR_ARCHS.update(CONDITIONAL_GENERATORS)
CRITIC_ARCHS.update(CONDITIONAL_CRITICS)

__all__ = [
    "CRITIC_ARCHS",
    "GENERATOR_ARCHS",
    "CGANCritic",
    "CGANGenerator",
    "ConditionalBatchNorm2d",
    "DCGANCritic",
    "DCGANGenerator",
    "MaskedMultichannelCritic",
    "MultichannelCritic",
    "MultichannelGenerator",
    "OneClassGenerators",
    "ProjectionCritic",
    "ProjectionGenerator",
    "SeparableGenerator",
    "StarGenerator",
    "build_critic",
    "build_generator",
    "canonical_arch",
    "count_parameters",
    "make_models",
    "masked_composites",
    "multichannel_size",
    "native_channels",
    "pairs_from_native",
    "tower_plan",
]
