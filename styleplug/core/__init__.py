"""The engine: the optimisation, its compiled chunk and optimisers, the memory planner, and the Keras backends."""
