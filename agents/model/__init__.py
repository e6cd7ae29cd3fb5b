"""Model endpoints: the async client every role calls, and the embedded llama-server with its model."""
