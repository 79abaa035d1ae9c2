"""Compliance audit: answers from the stored events alone.

`replay` rebuilds the views as they stood at a past position; `explain` tells one
vehicle's or one rollout's story; `export` streams events for other tools; `verify`
checks the hash chain kept beside the event log. Everything here only reads the log.
"""
