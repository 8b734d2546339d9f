"""The control plane (beat's jobs, queue `control`): targets become batches in epochs, batches
are dispatched to consumers, silent ones are found, config versions are announced."""
