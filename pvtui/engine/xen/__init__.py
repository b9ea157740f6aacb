"""The Xen x86-64 PV guest personality: Xen's boot layout, hypercalls and trap delivery.

A kernel whose ELF carries Xen's notes (``XEN_ELFNOTE_HYPERCALL_PAGE`` at
least) runs this way; every other kernel speaks pvtui's own ABI
(``docs/abi.md``). What is implemented and how it maps onto PVM/KVM is in
``docs/xen-abi.md``.
"""
