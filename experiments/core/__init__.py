"""What every other part uses and that uses nothing of ours: errors, atomic writes, the config schema, the runtime
(device, threads, seeds, provenance), the optional extras, where report commands write, matplotlib setup."""
