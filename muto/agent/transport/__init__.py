"""How the agent talks to the cloud: HTTP (desired state, reports) and MQTT (hints,
presence, snapshots). Neither is needed to stay safe: offline is normal."""
