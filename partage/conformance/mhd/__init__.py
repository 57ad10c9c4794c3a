"""Runner for the NIST (asbestos) MHD Document Recipient TestScripts: `partage testkit mhd`."""
