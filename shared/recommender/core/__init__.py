"""What every runtime shares: settings, domain errors, storage, the model registry and the model's items."""
