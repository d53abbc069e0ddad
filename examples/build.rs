//! Generates the calc service from the seed's calc.proto, verbatim.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    wish_core::build::Builder::new().compile(&["proto/calc.proto"], &["proto"])?;
    Ok(())
}
