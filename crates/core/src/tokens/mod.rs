//! Token-metered calls (LLM APIs): what a request may cost at most ([`request`]: the bound
//! reserved at admission, and the body rewrite that makes it hold) and what it did cost
//! ([`meter`]: the backend's `usage`, read from the response as it passes). Both run over one
//! bounded-state JSON lexer ([`lexer`]) that never copies the body.

pub mod lexer;
pub mod meter;
pub mod request;

pub use meter::{Meter, TokenUsage};
pub use request::{inspect, TokenRequest, MAX_COMPLETION_TOKENS, MEDIA_PART_TOKENS};
