"""What the orchestrators share: artifact paths, the stage table, the train launcher, params tools."""
