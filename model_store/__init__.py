"""camserve's demo models: their definitions, training, weights, archives and the localisation benchmark."""
