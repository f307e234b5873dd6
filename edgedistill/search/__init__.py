"""Students chosen by the device's measured latency: search space, latency model per target, quality proxy."""
