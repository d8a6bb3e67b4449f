"""Data: readers/writers, synthetic phantoms (more to come: dataset specs, transforms, datalists)."""
