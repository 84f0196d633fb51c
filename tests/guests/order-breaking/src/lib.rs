//! The next version of process-order, incompatible: its first step is renamed.

const FIRST_STEP: &str = "lookup-user";
include!("../../order-next.rs");
