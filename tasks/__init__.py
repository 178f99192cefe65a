"""PixelFlow's Prefect tasks: thin wrappers doing one side effect each."""
