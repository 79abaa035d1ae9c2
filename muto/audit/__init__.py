"""Compliance audit: answers from the stored events alone.

`replay` rebuilds the views as they stood at a past position; `explain` tells one
vehicle's or one rollout's story; `export` streams events for other tools; `verify`
checks the hash chain kept beside the event log. Everything here only reads the log,
through the EventSource port (muto/projections/source.py): the composer passes the
cloud's event log or the API's records in, so this package never imports the cloud.
"""
