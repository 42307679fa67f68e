//! A `redis-server` fixture.
