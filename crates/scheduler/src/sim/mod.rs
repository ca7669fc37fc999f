//! Trace-driven simulators: the FGD paper's placement replay on the Alibaba trace
//! ([`placement`]) and request serving on the Azure LLM trace ([`serving`]).

pub mod bound;
pub mod placement;
pub mod serving;
pub mod trace;
