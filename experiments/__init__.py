"""Everything that touches data, configs, files and logs."""
