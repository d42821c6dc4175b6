"""Sample discovery, image reading, datasets and loaders."""
