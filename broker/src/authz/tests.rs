//! Authorization decisions against small policies; pure logic, no hardware.
