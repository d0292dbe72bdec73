"""sagaflow: durable sagas, an event store and projections."""
