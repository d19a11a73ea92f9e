"""What a run is: the Job that describes it, its record, and the images it reads and writes."""
