// Board wrapper around the generated core (kessai_top): the board's oscillator through a PLL
// to the core clock, a synchronous reset held until the PLL has locked and ~65k cycles more
// (and while the button is pressed), and the two status LEDs. Hand-written because it only
// instantiates vendor primitives; the PLL module `pll` is generated per board by
// scripts/synth (icepll / ecppll). Defines (set by scripts/synth):
//   KESSAI_HAS_BUTTON      the board has an active-low reset button on btn_n
//   KESSAI_LED_ACTIVE_LOW  the LEDs light on 0
module kessai_board (
    input  wire clk_in,
    input  wire uart_rx_pin,
    output wire uart_tx_pin,
`ifdef KESSAI_HAS_BUTTON
    input  wire btn_n,
`endif
    output wire led_busy_pin,
    output wire led_error_pin
);
    wire clock;
    wire locked;
    pll pll_i (.clock_in(clk_in), .clock_out(clock), .locked(locked));

`ifdef KESSAI_HAS_BUTTON
    reg [1:0] btn_sync = 2'b00;  // two flops: the button is asynchronous
    always @(posedge clock) btn_sync <= {btn_sync[0], ~btn_n};
    wire pressed = btn_sync[1];
`else
    wire pressed = 1'b0;
`endif

    reg [15:0] por = 16'd0;
    reg reset = 1'b1;
    always @(posedge clock) begin
        if (!locked || pressed) begin
            por <= 16'd0;
            reset <= 1'b1;
        end else if (por != 16'hffff) begin
            por <= por + 16'd1;
        end else begin
            reset <= 1'b0;
        end
    end

    wire led_busy;
    wire led_error;
    kessai_top core (
        .clock(clock),
        .reset(reset),
        .uart_rx(uart_rx_pin),
        .uart_tx(uart_tx_pin),
        .led_busy(led_busy),
        .led_error(led_error)
    );

`ifdef KESSAI_LED_ACTIVE_LOW
    assign led_busy_pin = ~led_busy;
    assign led_error_pin = ~led_error;
`else
    assign led_busy_pin = led_busy;
    assign led_error_pin = led_error;
`endif
endmodule
