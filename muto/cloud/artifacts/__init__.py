"""Release artifacts the control plane hosts, content-addressed by sha256 digest."""
