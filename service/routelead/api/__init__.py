"""gRPC surface: servicer, conversions, server start-up and shutdown."""
