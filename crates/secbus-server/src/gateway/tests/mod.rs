//! Tests of the whole API through [`super::app`], and of the SSE stream over a
//! real socket.

mod auth_matrix;
mod engines;
mod metrics_text;
mod routes;
mod stream_socket;
mod support;
