"""The health check names what is wrong with a function's configuration space."""

from __future__ import annotations

import struct

from vfiod.engine.health import (
    IORESOURCE_IO,
    IORESOURCE_MEM,
    Expected,
    aer_uncorrectable_status,
    parse_resources,
    pcie_capability,
    problems,
)

VENDOR, DEVICE = 0x1002, 0x67DF
MEM32 = IORESOURCE_MEM | 0x40000
MEM64 = IORESOURCE_MEM | 0x100000 | 0x40000
EXPECTED = Expected(VENDOR, DEVICE, command=0x0406)
RESOURCES = [(0xE0000000, 0xEFFFFFFF, MEM32), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0),
             (0, 0, 0)]


def config(*, vendor: int = VENDOR, device: int = DEVICE, command: int = 0x0406,
           header: int = 0x00, bar0: int = 0xE0000000, link_width: int = 16,
           port_type: int = 0x0, aer_status: int | None = None) -> bytes:
    """A PCIe function's 4096-byte configuration space."""
    cfg = bytearray(4096)
    struct.pack_into("<HHHH", cfg, 0, vendor, device, command, 0x0010)
    cfg[0x0E] = header
    struct.pack_into("<I", cfg, 0x10, bar0)
    cfg[0x34] = 0x40
    cfg[0x40:0x42] = bytes((0x10, 0x00))
    struct.pack_into("<H", cfg, 0x42, 0x0002 | port_type << 4)
    struct.pack_into("<I", cfg, 0x4C, 0x0103)
    struct.pack_into("<H", cfg, 0x52, 0x0003 | link_width << 4)
    if aer_status is not None:
        struct.pack_into("<II", cfg, 0x100, 0x0001 | 2 << 16, aer_status)
    return bytes(cfg)


def test_a_function_as_it_was_is_healthy() -> None:
    assert problems(config(), EXPECTED, RESOURCES) == []


def test_all_ones_is_the_only_problem_named_for_a_dead_function() -> None:
    assert problems(b"\xff" * 4096, EXPECTED, RESOURCES) == [
        "config space reads all ones (vendor 0xffff): it does not answer"]


def test_header_type_0x7f_is_named() -> None:
    assert "header type reads 0x7f" in problems(config(header=0x7F), EXPECTED, RESOURCES)


def test_another_identity_is_named_with_both_ids() -> None:
    found = problems(config(device=0x67EF), EXPECTED, RESOURCES)
    assert found == ["identity changed: reads 1002:67ef, was 1002:67df"]


def test_a_command_register_that_lost_memory_decoding_is_named() -> None:
    found = problems(config(command=0x0000), EXPECTED, RESOURCES)
    assert found == ["command register not restored: reads 0x0000, was 0x0406"]


def test_the_command_register_is_not_compared_after_a_rescan() -> None:
    rescanned = Expected(VENDOR, DEVICE, command=None)
    assert problems(config(command=0x0000), rescanned, RESOURCES) == []


def test_a_bar_that_reads_zero_is_named_with_the_kernels_address() -> None:
    found = problems(config(bar0=0), EXPECTED, RESOURCES)
    assert found == ["BAR0 not restored: reads 0x0, the kernel assigned 0xe0000000"]


def test_a_64_bit_bar_is_read_from_both_halves() -> None:
    cfg = bytearray(config(bar0=0x0000000C))  # 64-bit prefetchable, low half 0
    struct.pack_into("<I", cfg, 0x14, 0x00000004)  # high half: 0x4_0000_0000
    resources = [(0x400000000, 0x40FFFFFFF, MEM64), (0, 0, 0)]
    assert problems(bytes(cfg), EXPECTED, resources) == []


def test_an_io_bar_masks_its_two_flag_bits() -> None:
    resources = [(0xE000, 0xE0FF, IORESOURCE_IO)]
    assert problems(config(bar0=0xE001), EXPECTED, resources) == []


def test_an_endpoint_whose_link_trained_to_width_zero_is_link_down() -> None:
    found = problems(config(link_width=0), EXPECTED, RESOURCES)
    assert found == ["PCIe link down (Link Status: negotiated width 0)"]


def test_a_root_port_has_no_link_above_it_to_be_down() -> None:
    assert problems(config(port_type=0x4, link_width=0), EXPECTED, RESOURCES) == []


def test_a_new_uncorrectable_aer_error_is_named() -> None:
    found = problems(config(aer_status=1 << 14), EXPECTED, RESOURCES)
    assert found == ["uncorrectable AER status 0x00004000 (Completion Timeout)"]


def test_an_aer_bit_already_set_before_the_reset_is_not_blamed_on_it() -> None:
    sticky = Expected(VENDOR, DEVICE, command=0x0406, aer_before=1 << 5)
    assert problems(config(aer_status=1 << 5), sticky, RESOURCES) == []


def test_a_conventional_function_has_no_pcie_capability_and_no_aer() -> None:
    cfg = bytearray(256)
    struct.pack_into("<HH", cfg, 0, VENDOR, DEVICE)
    assert pcie_capability(bytes(cfg)) is None
    assert aer_uncorrectable_status(bytes(cfg)) is None


def test_a_looping_capability_list_ends() -> None:
    cfg = bytearray(config())
    cfg[0x40:0x42] = bytes((0x05, 0x40))  # MSI pointing at itself
    assert pcie_capability(bytes(cfg)) is None


def test_the_resource_file_is_read_line_by_line() -> None:
    text = ("0x00000000e0000000 0x00000000efffffff 0x0000000000040200\n"
            "0x0000000000000000 0x0000000000000000 0x0000000000000000\n")
    assert parse_resources(text) == [(0xE0000000, 0xEFFFFFFF, 0x40200), (0, 0, 0)]
