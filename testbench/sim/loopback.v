// Test fixture for the pty bridge (testbench/tests/verilator_bridge.rs): a "board" that echoes
// its UART line one clock later, so every bit the bridge serializes comes straight back.
module kessai_top(input clock, input reset, input uart_rx, output uart_tx, output led_busy, output led_error);
  reg r;
  always @(posedge clock) r <= reset ? 1'b1 : uart_rx;
  assign uart_tx = r;
  assign led_busy = 1'b0;
  assign led_error = 1'b0;
endmodule
