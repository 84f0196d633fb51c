//! The next version of process-order, compatible with its recorded runs.

const FIRST_STEP: &str = "get-user";
include!("../../order-next.rs");
