"""Cleanup: accept() (the only way into the spool), inspection, CPU placement, workers, backpressure."""
