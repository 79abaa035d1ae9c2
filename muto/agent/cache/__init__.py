"""The agent's artifact cache: content-addressed, budgeted, pinned, resumable."""

from muto.agent.cache.artifact_cache import ArtifactCache, CacheEntry, EvictionRefused, cache_of

__all__ = ["ArtifactCache", "CacheEntry", "EvictionRefused", "cache_of"]
