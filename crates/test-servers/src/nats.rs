//! A `nats-server -js` fixture.
