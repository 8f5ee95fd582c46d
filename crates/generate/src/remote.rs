//! Prometheus remote_write 1.0 encoding (to be written).
