"""The RouteLead benchmark suite: load over gRPC, buyers in separate processes, ceilings in the same run."""
