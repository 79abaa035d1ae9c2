"""The operator's fleet CLI: `muto login | vehicles | releases | desired | rollouts | tokens`
over the control plane's HTTP API. Only `muto/cli.py` imports it, one group at a time:
a vehicle's `muto agent run` never loads it (nor rich)."""
