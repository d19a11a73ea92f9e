"""The front ends over the engine: the command line, the web demo, batches and videos."""
