"""The invoices' documents: the FA(3) XML as KSeF stored it (kept by the gateway), its HTML preview, and the ZIP
bundle of a month's ready-to-book XML with a manifest for desktop ERPs."""
