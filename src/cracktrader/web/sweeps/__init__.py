"""Parameter sweeps over HTTP: `/sweeps`."""
