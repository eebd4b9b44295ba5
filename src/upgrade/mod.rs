//! `meshctl upgrade`.
