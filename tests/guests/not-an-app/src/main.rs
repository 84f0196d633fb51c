//! A plain WASI command: a valid component that is not a Stepwise app, for
//! the test that uploads a component of the wrong world.

fn main() {
    println!("hello from a command component");
}
