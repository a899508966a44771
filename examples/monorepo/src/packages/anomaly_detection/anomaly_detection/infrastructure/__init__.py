"""Infrastructure layer: adapters to files, HTTP and other packages."""
