//! Prints the GraphQL SDL (no database needed): `cargo run -p api --bin export-schema > schema.graphql`

#![allow(clippy::print_stdout)]

fn main() {
    print!("{}", api::graphql::sdl());
}
