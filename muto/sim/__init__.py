"""Fleet simulator: real agents (the same code as `muto agent run`) against simulated
vehicles (state, clock, link to the cloud) and the simulated runtime."""
