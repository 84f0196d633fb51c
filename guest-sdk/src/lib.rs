//! Write durable step functions for Stepwise in Rust.
//!
//! ```ignore
//! use stepwise_sdk::{App, Ctx, Error, Function, WaitFor, export_app};
//!
//! fn app() -> App {
//!     App::new().function(
//!         Function::new("process-order").on_event("shop/order.created"),
//!         process_order,
//!     )
//! }
//! export_app!(app);
//!
//! fn process_order(ctx: Ctx<Order>) -> Result<String, Error> {
//!     let step = &ctx.step;
//!     let user: User = step.run("get-user", || get_user(&ctx.event.data.user_id))?;
//!     step.sleep("wait-for-payment", "1h")?;
//!     let payment = step.wait_for_event(
//!         "wait-payment",
//!         WaitFor::event("shop/payment.success").matching("data.orderId").timeout("24h"),
//!     )?;
//!     // ...
//! }
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm` is
//! a component that `stepwise deploy` accepts.

mod app;
mod config;
mod duration;
mod error;
mod event;
pub mod http;
mod step;

/// Bindings generated from `wit/`; the SDK's types wrap them.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "app",
        pub_export_macro: true,
        default_bindings_module: "stepwise_sdk::bindings",
    });
}

pub use app::{App, Ctx, FailureCtx, Function};
pub use config::{
    Batch, CancelOn, Concurrency, Debounce, RateLimit, Singleton, Throttle, Timeouts,
};
pub use duration::{IntoDuration, MAX_DURATION, parse_duration};
pub use error::{Error, NonRetriableError, RetryAfterError};
pub use event::Event;
pub use step::{Invoke, Join, NewEvent, Step, Timestamp, WaitFor};

/// Exports an app: `export_app!(app)` where `fn app() -> App` lists every
/// function. Call it once, in the component's crate root.
#[macro_export]
macro_rules! export_app {
    ($app:path) => {
        struct __StepwiseGuest;

        impl $crate::bindings::Guest for __StepwiseGuest {
            fn functions()
            -> ::std::vec::Vec<$crate::bindings::stepwise::durable::types::FunctionConfig> {
                $app().configs()
            }

            fn handle(
                function_id: ::std::string::String,
                ctx: $crate::bindings::stepwise::durable::types::RunContext,
            ) -> ::std::result::Result<
                ::std::string::String,
                $crate::bindings::stepwise::durable::types::StepError,
            > {
                $app().handle(&function_id, ctx)
            }

            fn on_failure(
                function_id: ::std::string::String,
                ctx: $crate::bindings::stepwise::durable::types::FailureContext,
            ) -> ::std::result::Result<
                ::std::string::String,
                $crate::bindings::stepwise::durable::types::StepError,
            > {
                $app().handle_failure(&function_id, ctx)
            }
        }

        $crate::bindings::export!(__StepwiseGuest with_types_in $crate::bindings);
    };
}
